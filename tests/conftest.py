import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

# Session fixtures of the notebook layer (one hybrid cluster, one Jupyter kernel).
pytest_plugins = ["cluster_fixtures"]
