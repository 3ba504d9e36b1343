"""The library function behind each command, taking the composed config and explicit arguments.

``python -m lstc_gait.<command>`` (and its console script) composes the Hydra config and calls one
function here: :func:`.train.launch`, :func:`.evaluate.evaluate`, :func:`.extract.extract`,
:func:`.export.export`, :func:`.report.report`, :func:`.prepare.prepare`. Tests call them directly.
"""
