"""A researcher's own plug-ins, outside the package (tests/test_plugins.py): a task, a metric, an
intervention kind and a recipe, each found by MODULE:ATTR."""
