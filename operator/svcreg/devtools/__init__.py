"""Tools for people working on or trying svcreg: ``svcreg dev``, the local control plane built
from Go modules, and a kubectl helper. Never imported by runtime code (operator, discovery,
client); the image does not ship what it needs (the ``dev`` extra).
"""
