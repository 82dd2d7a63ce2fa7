"""`python -m devise` runs the command-line tool."""

from devise.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
