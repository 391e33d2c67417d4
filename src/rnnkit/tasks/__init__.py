"""The tasks ``rnnkit train --task NAME`` can train (``rnnkit tasks`` lists them).

A task is an object of the ``Task`` protocol (``rnnkit.tasks.base``); ``TASKS`` maps each name to
one. A task of your own trains with ``rnnkit.train.fit(config, data, task=MyTask(), ...)``.
"""

from rnnkit.tasks.base import Task
from rnnkit.tasks.dates import DatesTask
from rnnkit.tasks.mnist import MnistTask
from rnnkit.tasks.reber import ReberTask
from rnnkit.tasks.spell import SpellTask
from rnnkit.tasks.timeseries import TimeSeriesTask

TASKS = {task.name: task for task in (MnistTask(), TimeSeriesTask(), ReberTask(), DatesTask(),
                                      SpellTask())}
DEFAULT = "mnist"


def get_task(name):
    """The task called ``name``; a ValueError names the known ones."""
    if name not in TASKS:
        raise ValueError(f"task: expected one of {', '.join(TASKS)}, got {name!r}")
    return TASKS[name]


def task_of(config_dict):
    """The task of a saved configuration (``config.json``; a run from before tasks is MNIST)."""
    name = config_dict.get("task", DEFAULT) if isinstance(config_dict, dict) else DEFAULT
    return get_task(name)


__all__ = ["DEFAULT", "TASKS", "Task", "get_task", "task_of"]
