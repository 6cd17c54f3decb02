from aipc.cli import entry

entry()
