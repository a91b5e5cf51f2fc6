"""The error every layer may raise for a user's mistake in settings or arguments (no imports: any module may use
it without reaching up to the configuration loader)."""


class ConfigError(ValueError):
    """A usage or configuration error: an override that names no setting or has a value of the wrong type, a
    setting that cannot work, or a setting this machine cannot honour (``DEVICE=cuda`` without a GPU). Scripts
    report it in one line and exit with status 2."""
