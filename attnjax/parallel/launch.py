"""``python -m attnjax.parallel.launch -n 2 --local-devices 4 -- COMMAND``: see
``attnjax.parallel.distributed``."""

import sys

from attnjax.parallel.distributed import main

if __name__ == "__main__":
    sys.exit(main())
