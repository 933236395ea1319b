"""seqio tasks for SuperGLUE, GLUE, CLUE and NER; importing this package registers all of them.

Task names and the dataset API: tasks/registry.py. Local files vs TFDS: tasks/data_dir.py.
"""
from tasks import registry
from tasks.registry import label_strings, model_dataset, task_dataset, task_metrics, task_names  # noqa: F401

registry.register_all()
