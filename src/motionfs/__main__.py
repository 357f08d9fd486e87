from motionfs.cli import main

main()
