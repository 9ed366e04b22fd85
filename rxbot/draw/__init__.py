"""Pictures of pipes and runs: the graph (``render``), its Graphviz layout, the HTML
report, notebook display and the live view's page (``watch``). Drawing reads the
step tree and the plan, never the engine's internals.
"""
