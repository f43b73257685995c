from smimg.cli.main import main

main()
