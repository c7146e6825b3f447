"""Allows ``python -m modelrollout`` as well as the ``modelrollout`` console script."""

from modelrollout.cli import main

if __name__ == "__main__":
    main()
