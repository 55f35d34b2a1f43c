"""Weight conversion between rnn_jax and the other libraries' recurrent cells.

* :mod:`rnn_jax.interop.torch`: PyTorch ``nn.RNN`` (tanh/relu), ``nn.LSTM``, ``nn.GRU``
  (any ``num_layers``, ``bias``, ``batch_first``, ``bidirectional``) and the single-step
  ``nn.RNNCell``, ``nn.LSTMCell``, ``nn.GRUCell``.
* :mod:`rnn_jax.interop.flax`: Flax linen ``SimpleCell``, ``LSTMCell``,
  ``OptimizedLSTMCell``, ``GRUCell``, and their ``nn.RNN`` / ``nn.Bidirectional`` wrappers.

The peer libraries are optional extras (``pip install rnn_jax[peers]``): neither
this package nor its submodules import them until a conversion needs them.

Layout differences handled here (see each module for details):

* rnn_jax stores matrices ``(in, out)`` and applies ``x @ w``; PyTorch stores
  ``(out, in)``; Flax stores kernels ``(in, out)`` per gate.
* rnn_jax keeps one bias per gate block (PyTorch's ``b_ih + b_hh`` folded), except
  the GRU's ``b_hn``, which sits inside the reset-gate product. Converting back puts
  the folded bias into ``bias_ih`` and zeros (``b_hn`` for the GRU's n block) into
  ``bias_hh``: the round trip rnn_jax -> PyTorch -> rnn_jax is bit-exact, and
  PyTorch -> rnn_jax -> PyTorch gives a module with the same outputs.
* Carries: rnn_jax ``LSTMState(hidden, cell)``; PyTorch ``(h, c)`` stacked over
  ``num_layers * num_directions``; Flax ``(c, h)``. Converters for each are provided.
"""
