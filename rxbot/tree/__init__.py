"""The step tree: the plain data a pipe is (``Pipe`` and its routes, ``Step``, ``Node``,
walking the tree, Rx operators as sources). It imports nothing above it (the engine,
the plan, pictures and reports read it), see tests/test_layers.py.
"""
