from gtr.cli import main

main()
