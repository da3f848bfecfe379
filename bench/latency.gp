# The latency plot of scripts/bench.sh: the distribution of each transport's round trip in its 64 B,
# one-thread-each-side case, from the percentile points fltport-bench writes with --dat. x is the
# round trip on a log scale; y is the percentile on a "nines" scale (90 %, 99 %, 99.9 % evenly
# spaced), so that the tail is as visible as the median.
#
#   gnuplot -e "datafile='build/release/bench-results-latency.dat'; outfile='build/release/bench-latency.png'" \
#           bench/latency.gp
if (!exists("datafile")) datafile = 'build/release/bench-results-latency.dat'
if (!exists("outfile")) outfile = 'build/release/bench-latency.png'
if (!exists("subtitle")) subtitle = ''

if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
  set terminal pngcairo size 1400,750 font 'sans,11'
} else {
  set terminal png size 1400,750
}
set output outfile

set title "Round trip between two processes: 64 B request, 16 B reply, one thread on each side\n".subtitle
set logscale x 10
set format x "%g"
set xlabel "round trip (µs, log scale)"
set ylabel "percentile"
# Explicit tic labels are format strings: "%%" is a percent sign.
set ytics ("0" 0, "50%%" 0.30103, "90%%" 1, "99%%" 2, "99.9%%" 3, "99.99%%" 4, "99.999%%" 5, "99.9999%%" 6)
set yrange [0:*]
set grid xtics mxtics ytics
set key outside right center box noenhanced  # labels such as AF_UNIX are not markup
set style data lines

stats datafile using 1 nooutput
plot for [i=0:STATS_blocks - 1] datafile index i using 1:3 linewidth 2 title columnheader(1)
