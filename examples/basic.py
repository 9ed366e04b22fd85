"""databot's first pipeline: Loop -> double -> triple -> print."""
from rxbot import *


def double(a):
    return 2 * a


def triple(a):
    return 3 * a


Pipe(Loop(range(10)), double, triple, print)
BotFrame.run()
