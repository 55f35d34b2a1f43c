"""A small sweep run in a subprocess by the sharding, distributed and kill-and-resume tests.

usage: python -m tests.sweep_worker OUT_DIR [--distributed PORT PROCESS_ID NUM_PROCESSES] [--slow]
"""

import json
import sys
import time


def small_sweep():
    import rnn_jax
    from rnn_jax.repro import tasks, train

    task = tasks.get("adding", min_length=10, max_length=12)
    setup = train.Setup(cell=rnn_jax.elman(8, scheme="basic_tanh"), task=task, batch_size=8,
                        eval_size=64, eval_batch_size=32, regularize=True)
    # members 2 and 7 diverge (a huge unclipped step): the others must go on, through kills and resumes
    members = [dict(seed=s, learning_rate=lr, clip=clip, alpha=alpha)
               for s, (lr, clip, alpha) in enumerate([(0.05, 1.0, 0.0), (0.1, 1.0, 2.0), (1e4, float("inf"), 0.0),
                                                       (0.05, 1.0, 4.0), (0.1, 1.0, 0.0), (0.2, 1.0, 2.0),
                                                       (0.05, 1.0, 0.0), (1e4, float("inf"), 4.0)])]
    return setup, members


def main(argv):
    out_dir = argv[0]
    if "--distributed" in argv:
        i = argv.index("--distributed")
        port, pid, n = argv[i + 1], int(argv[i + 2]), int(argv[i + 3])
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=n, process_id=pid)
    from rnn_jax.repro import sweep

    setup, members = small_sweep()
    on_chunk = (lambda c, h: time.sleep(0.05)) if "--slow" in argv else None
    results = sweep.run_sweep(setup, members, out_dir, max_steps=60, chunk_steps=10, progress=False, on_chunk=on_chunk)
    import jax

    print("RESULTS " + json.dumps({"devices": jax.device_count(), "processes": jax.process_count(), "results": results}))


if __name__ == "__main__":
    main(sys.argv[1:])
