"""``python -m edgeopt.cli``: the ``edgeopt`` command."""

from edgeopt.cli import main

if __name__ == "__main__":
    main()
