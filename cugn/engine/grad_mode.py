"""Whether operations record themselves on the tape (per thread, like PyTorch)."""

import functools
import threading

_state = threading.local()


def is_grad_enabled():
    return getattr(_state, "enabled", True)


class _GradMode:
    """A context manager and decorator that sets the recording mode inside it."""

    mode = True

    def __enter__(self):
        self.previous = is_grad_enabled()
        _state.enabled = self.mode

    def __exit__(self, *exc_info):
        _state.enabled = self.previous

    def __call__(self, fn):
        mode = self.mode

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            previous = is_grad_enabled()
            _state.enabled = mode
            try:
                return fn(*args, **kwargs)
            finally:
                _state.enabled = previous

        return wrapper


class no_grad(_GradMode):
    """Operations inside do not record: ``with cugn.no_grad(): ...`` or ``@cugn.no_grad()``."""

    mode = False


class enable_grad(_GradMode):
    """Operations inside record, even within ``no_grad``."""

    mode = True


class set_grad_enabled(_GradMode):
    """Set the mode now; used as a context manager, the old mode returns on exit; used
    as a decorator, the mode holds inside the function only."""

    def __init__(self, mode):
        self.mode = bool(mode)
        self.previous = is_grad_enabled()
        _state.enabled = self.mode

    def __enter__(self):
        pass

    def __call__(self, fn):
        # As a decorator the mode applies inside fn only: undo the change made above.
        _state.enabled = self.previous
        return super().__call__(fn)
