"""Short manual pages in the style of ls(1), grep(1) and chmod(1), written for the relevance gate's
tests: they use "name", "three", "colour" and "file" the way manuals do (an option --colour, a file
NAME, three permission classes), so a question made of those words is about them only by its words."""

MAN_PAGES = {
    "grep.txt": """GREP(1)                      User Commands                      GREP(1)

NAME
       grep - print lines that match patterns

SYNOPSIS
       grep [OPTION...] PATTERNS [FILE...]

DESCRIPTION
       grep searches for PATTERNS in each FILE. A FILE of "-" stands for standard input. If no FILE
       is given, recursive searches examine the working directory, and nonrecursive searches read
       standard input. By default, grep prints the matching lines.

OPTIONS
       -i, --ignore-case
              Ignore case distinctions in patterns and input data, so that characters that differ
              only in case match each other.

       -c, --count
              Suppress normal output; instead print a count of matching lines for each input file.

       -r, --recursive
              Read all files under each directory, recursively, following symbolic links only if
              they are on the command line.

       --colour[=WHEN], --color[=WHEN]
              Surround the matched (non-empty) strings, matching lines, context lines, file names,
              line numbers, byte offsets, and separators with escape sequences to display them in
              colour on the terminal. The colours are defined by the environment variable
              GREP_COLORS. WHEN is never, always, or auto.

       -l, --files-with-matches
              Suppress normal output; instead print the name of each input file from which output
              would normally have been printed.

EXIT STATUS
       Normally the exit status is 0 if a line is selected, 1 if no lines were selected, and 2 if
       an error occurred. However, if the -q is used and a line is selected, the exit status is 0
       even if an error occurred.
""",
    "ls.txt": """LS(1)                        User Commands                        LS(1)

NAME
       ls - list directory contents

SYNOPSIS
       ls [OPTION]... [FILE]...

DESCRIPTION
       List information about the FILEs (the current directory by default). Sort entries
       alphabetically if none of -cftuvSUX nor --sort is specified.

       -a, --all
              do not ignore entries starting with .

       -l     use a long listing format: the file mode, number of links, owner name, group name,
              size, time of last modification and the name.

       -S     sort by file size, largest first

       -t     sort by time, newest first

       --color[=WHEN]
              colorize the output; WHEN can be 'always', 'auto', or 'never'. Using colour to
              distinguish file types is disabled both by default and with --color=never.

       -h, --human-readable
              with -l, print sizes like 1K 234M 2G

EXIT STATUS
       0 if OK, 1 if minor problems (e.g., cannot access subdirectory), 2 if serious trouble.
""",
    "chmod.txt": """CHMOD(1)                     User Commands                     CHMOD(1)

NAME
       chmod - change file mode bits

SYNOPSIS
       chmod [OPTION]... MODE[,MODE]... FILE...

DESCRIPTION
       chmod changes the file mode bits of each given file according to mode, which can be either
       a symbolic representation of changes to make, or an octal number representing the bit
       pattern for the new mode bits.

       The format of a symbolic mode is [ugoa...][[-+=][perms...]...]. There are three classes of
       users: the user who owns the file (u), other users in the file's group (g), and other users
       not in the file's group (o). The letter a stands for all three.

       The operator + causes the selected file mode bits to be added to the existing file mode bits
       of each file; - causes them to be removed; and = causes them to be added and causes
       unmentioned bits to be removed. The letters rwx select read (r), write (w) and execute (x)
       permission, so chmod +x script.sh makes a script executable and chmod g+w notes.txt gives
       the group write permission.

       A numeric mode is from one to four octal digits (0-7), derived by adding up the bits with
       values 4, 2, and 1: chmod 755 gives the owner all three permissions and everyone else read
       and execute.

OPTIONS
       -R, --recursive
              change files and directories recursively
""",
}
