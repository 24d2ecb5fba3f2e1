"""One error type for everything a user can cause: it names the problem and the fix."""


class MobileSDError(Exception):
    """A user-facing error. ``problem`` says what is wrong, ``fix`` says what to do about it."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem}\n  fix: {fix}")
