"""The one exception type that means "the user gave us something we cannot use".

Library code raises :class:`NSTError` with a one-line message that names the
problem (a path, a field, a value); the CLI prints ``error: <message>`` and
exits with status 2 instead of a traceback. Anything else is a bug and keeps
its traceback.
"""


class NSTError(ValueError):
  """A problem with the user's input, reported as one line without traceback."""
