"""The hook specifications every plugin implements (entry-point group ``harness``).

Each hook returns a list of plugin *classes* (subclasses of the bases in
:mod:`harness.api`). Classes, not instances: listing plugins must not build models or
import torch.

A third-party distribution declares::

    [project.entry-points.harness]
    my_method = "my_package.plugin"

and ``my_package/plugin.py`` defines ``@hookimpl def harness_methods(): return [MyMethod]``.
"""
import pluggy

PROJECT = "harness"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def harness_datasets():
    """Return a list of :class:`harness.api.Dataset` subclasses."""


@hookspec
def harness_backbones():
    """Return a list of :class:`harness.api.Backbone` subclasses."""


@hookspec
def harness_methods():
    """Return a list of :class:`harness.api.Method` subclasses."""


@hookspec
def harness_postprocessors():
    """Return a list of :class:`harness.api.PostProcessor` subclasses."""


@hookspec
def harness_evaluators():
    """Return a list of :class:`harness.api.Evaluator` subclasses."""
