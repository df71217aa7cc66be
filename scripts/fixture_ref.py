"""What every fixture script starts from: the float64 reference (../shared/reference/els_ref.py,
or the path given as the first argument) loaded as a module, and the fixtures folder."""
import importlib.util
import os
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
fx = os.path.join(root, "tests", "fixtures")
_ref_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "..", "shared", "reference", "els_ref.py")
_spec = importlib.util.spec_from_file_location("els_ref", _ref_path)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)
