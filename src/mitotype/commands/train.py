"""(not built yet)"""


def add_arguments(parser):
    pass


def run(args):
    from mitotype.errors import MitotypeError

    raise MitotypeError("this command is not built yet")
