from sagips.cli import main

main()
