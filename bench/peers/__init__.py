"""The peers benchmark (issue 15): inferplex against the systems a user would pick instead.

    .venv/bin/python -m bench.peers [--systems inferplex,ray,torchserve,mlserver,triton] [--quick]

``workload`` builds the models and the seeded trace every system replays; ``base`` is what
an adapter implements; ``runner`` runs one system in its own process (inside a private
network namespace where the adapter asks for one) and ``__main__`` runs them one after
another and writes ``bench/results/peers.{md,png}``. Every peer is installed by the bench
into its own virtual environment under ``bench/.peers/`` (ignored by git).
"""
