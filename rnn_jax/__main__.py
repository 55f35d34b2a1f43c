import sys

from rnn_jax.cli import main

sys.exit(main())
