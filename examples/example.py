"""databot's examples/example.py, unchanged but for the import: a constant first step
turns the trigger into the dict; print returns None, so the next prints see nothing."""
from rxbot import *

Pipe(
    {'a': 1, 'b': 2},
    print,
    print,

    print,

)
BotFrame.run()
