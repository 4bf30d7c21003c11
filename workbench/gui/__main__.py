import sys

from workbench.gui.app import main

raise SystemExit(main(sys.argv[1:]))
