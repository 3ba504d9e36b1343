"""lstc_gait: a gait recognition experiment platform around the LSTC/LSTP model family.

Importing the package is cheap on purpose: heavy optional dependencies (mlflow) are imported
lazily, only where tracking happens.
"""

__version__ = "0.1.0"
