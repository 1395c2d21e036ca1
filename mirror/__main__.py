"""`python -m mirror` runs the command line."""

from mirror.cli import main

if __name__ == "__main__":
    main()
