import sys

from rnn_jax.repro.cli import main

sys.exit(main())
