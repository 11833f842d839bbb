"""The four models behind one interface (base.py) and their ensemble."""
