"""One module per ``capctl`` subcommand (or a few related ones), imported only when it runs
(:data:`capctl.cli.COMMANDS`)."""
