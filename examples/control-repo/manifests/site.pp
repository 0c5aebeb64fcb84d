# The example control repository. Classes and variables come from the
# directory through opslab-enc; this file only guards where things go.
#
# Every file is written below the opslab_root fact, so trying opslab never
# touches the machine itself: `FACTER_opslab_root=/some/scratch puppet apply`.
if $facts['opslab_root'] == undef {
  fail('this example writes only below the opslab_root fact; set FACTER_opslab_root')
}
