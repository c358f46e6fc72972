"""Loader restarts in the run's records: `LoaderRestartHook` counts the worker deaths the loaders
survived (vbench/data/restart.py) over every process, per epoch and over the run.

Each epoch record gets `loader_restarts` (restarts on any rank during the epoch's training and
evaluation); the run facts get `loader_restarts`, the list of every restart so far (role, rank,
epoch, plan worker, pid, how it ended, the batch it resumed at, the seconds to the next batch),
which results.json keeps and checkpoints carry across resumes.
"""
from vbench.engine import distributed as du
from vbench.engine.train_loop import HookBase


def _new_events(loader, start):
    return list(loader.restarts.events[start:]) if loader.restarts is not None else []


class LoaderRestartHook(HookBase):
    """Put the loaders' restarts into the storage after each epoch (after evaluation, before the
    writers) and, when training fails, this rank's restarts not yet reported."""

    def __init__(self):
        self.events = []  # the run's restarts, over all ranks (saved in checkpoints)
        self._seen = {"train": 0, "eval": 0}  # events of this process's loaders already counted

    def _unseen(self):
        t = self.trainer
        new = []
        for role, loader in (("train", t.train_loader), ("eval", t.val_loader)):
            events = _new_events(loader, self._seen[role])
            self._seen[role] += len(events)
            new += events
        return new

    def before_train(self):
        self.trainer.storage.put_run(loader_restarts=list(self.events))

    def after_epoch(self):
        t = self.trainer
        new = [event for events in du.all_gather_objects(self._unseen()) for event in events]
        self.events += new
        t.storage.put_epoch(loader_restarts=len(new))
        t.storage.put_run(loader_restarts=list(self.events))

    def after_train(self):
        if self.trainer.failure is not None:  # no collective: the other processes may be gone
            self.events += self._unseen()
            self.trainer.storage.put_run(loader_restarts=list(self.events))

    def state_dict(self):
        return {"loader_restarts": list(self.events)}

    def load_state_dict(self, state):
        self.events = list(state.get("loader_restarts", []))
