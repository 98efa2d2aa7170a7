"""`python -m keel.native` runs the keel command."""

from keel.native.cli import main

main()
