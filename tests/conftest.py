import sys
from pathlib import Path

# tests import their helpers (naive.py, gradcheck.py) as plain modules
sys.path.insert(0, str(Path(__file__).parent))
