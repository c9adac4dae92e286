"""Solution to exercise 1: the project's own int2bit / bit2int (bits.py) are the answer."""
from bits import bit2int, int2bit  # noqa: F401
