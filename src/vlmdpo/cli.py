"""Command-line entry point: argument parsing only; each command calls one function."""
import sys


def main(argv=None) -> int:
    print("vlmdpo: under construction", file=sys.stderr)
    return 2
