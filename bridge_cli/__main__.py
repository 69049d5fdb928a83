from bridge_cli.cli.app import main

main()
