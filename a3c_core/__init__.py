"""a3c_core: baby-a3c's asynchronous advantage actor-critic, rebuilt, fast and tested.

Modules in reading order (and chapter order of the book): config, preprocess, envs,
network, loss, optim, policy, plain_worker, worker, train, runs, checkpoint, play,
cli; and saliency, results, original, show.
"""

from .config import SEED_PRESET, A3CConfig

__all__ = ["A3CConfig", "SEED_PRESET"]
