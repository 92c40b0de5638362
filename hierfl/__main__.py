from hierfl.cli.app import main

main()
