"""Stand-ins for StarCraft II: importable ``smac`` and ``smacv2`` packages (put THIS directory on
``sys.path``/``PYTHONPATH``, only where the real packages are not installed; see ``backend.py``)."""
