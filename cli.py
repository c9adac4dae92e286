"""Command-line plumbing shared by train.py, sample.py, video.py and ablations.py: bad input
ends in one line on stderr and exit status 2, never a traceback."""
import argparse
import sys


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (its default prints the usage too)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def fail(prog, message):
    """Print `prog: error: message` as one line (white space folded) and exit with status 2."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(2)
