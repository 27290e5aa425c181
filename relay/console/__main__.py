"""``python -m relay.console --host 127.0.0.1 --port N``: the console, as ``relay dev`` runs it."""

from .server import main

if __name__ == "__main__":
    main()
