"""Fix plans, one planner algorithm (base.py) and one small class per backend."""
