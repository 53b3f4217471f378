"""Show a3c_core's own source in the book (every chapter, from chapter 1 on).

Chapters never paste package code: they call `show(obj)`, which displays the real,
current source of a function, class or module, so the book cannot drift from the
code it explains.
"""

import inspect


def source(obj) -> str:
    """The source text of a function, class, method or module."""
    return inspect.getsource(obj)


def show(obj):
    """Display `obj`'s source with syntax highlighting (plain text outside Jupyter)."""
    from IPython.display import Code

    module = inspect.getmodule(obj)
    where = f"# {module.__name__.replace('.', '/')}.py" if module else ""
    return Code(f"{where}\n{source(obj)}", language="python")
