// The independent side of `cargo bench --bench agreement`: Kafka's own Java client commits
// offsets for many groups at random intervals and reads them all back every poll interval,
// and logs both with wall-clock times, for the benchmark to compare lagscaler's answers with.
//
//   java -cp <kafka classpath> Offsets.java BOOTSTRAP GROUPS_FILE LOG_FILE PARTITIONS END
//        MEAN_COMMIT_MS READ_EVERY_MS SECONDS SEED
//
// GROUPS_FILE has one "group topic" line per group. Each group first commits 0 on every
// partition, then "READY" is printed; from then on each group commits, at exponentially
// distributed intervals (mean MEAN_COMMIT_MS), one partition moved forward by 1 to 20 (never
// past END), one commit of a group at a time, until SECONDS have passed or standard input
// is closed; then "DONE" is printed. Log lines (times in ms since the epoch):
//   C group partition offset sent acked    an acknowledged commit
//   R group sent acked o0 o1 ...          every group's committed offsets, read together
// The reads use one batched ListConsumerGroupOffsets call for all groups (KIP-709).

import java.io.BufferedWriter;
import java.io.FileWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Random;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListConsumerGroupOffsetsSpec;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;

public class Offsets {
    static final int COMMITTERS = 8;
    static volatile long stopAt = Long.MAX_VALUE;

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        List<String[]> groups = new ArrayList<>();
        for (String line : Files.readAllLines(Path.of(args[1]))) {
            if (!line.isBlank()) groups.add(line.trim().split(" "));
        }
        BufferedWriter log = new BufferedWriter(new FileWriter(args[2]));
        int partitions = Integer.parseInt(args[3]);
        long end = Long.parseLong(args[4]);
        double meanCommitMs = Double.parseDouble(args[5]);
        long readEveryMs = Long.parseLong(args[6]);
        long seconds = Long.parseLong(args[7]);
        long seed = Long.parseLong(args[8]);

        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "20000");
        try (Admin admin = Admin.create(props)) {
            long[][] committed = new long[groups.size()][partitions];
            for (String[] group : groups) {
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                for (int p = 0; p < partitions; p++) {
                    offsets.put(new TopicPartition(group[1], p), new OffsetAndMetadata(0));
                }
                admin.alterConsumerGroupOffsets(group[0], offsets).all().get(30, TimeUnit.SECONDS);
            }
            System.out.println("READY");
            System.out.flush();
            stopAt = System.currentTimeMillis() + seconds * 1000;
            // Standard input closed (the benchmark is done): stop, with every line written.
            Thread stdin = new Thread(() -> {
                try {
                    while (System.in.read() >= 0) { }
                } catch (Exception e) {
                    // Closed either way.
                }
                stopAt = 0;
            });
            stdin.setDaemon(true);
            stdin.start();

            List<Thread> threads = new ArrayList<>();
            for (int c = 0; c < COMMITTERS; c++) {
                final int committer = c;
                Thread thread = new Thread(() -> {
                    Random random = new Random(seed * 31 + committer);
                    List<Integer> mine = new ArrayList<>();
                    for (int g = committer; g < groups.size(); g += COMMITTERS) mine.add(g);
                    long[] due = new long[mine.size()];
                    long now = System.currentTimeMillis();
                    for (int i = 0; i < due.length; i++) due[i] = now + next(random, meanCommitMs);
                    try {
                        while (true) {
                            int first = 0;
                            for (int i = 1; i < due.length; i++) if (due[i] < due[first]) first = i;
                            long wait = due[first] - System.currentTimeMillis();
                            if (due[first] >= stopAt) break;
                            if (wait > 0) Thread.sleep(Math.min(wait, 100));
                            if (due[first] > System.currentTimeMillis()) continue;
                            int g = mine.get(first);
                            String[] group = groups.get(g);
                            int p = random.nextInt(partitions);
                            long offset = Math.min(end, committed[g][p] + 1 + random.nextInt(20));
                            long sent = System.currentTimeMillis();
                            admin.alterConsumerGroupOffsets(group[0],
                                    Map.of(new TopicPartition(group[1], p), new OffsetAndMetadata(offset)))
                                .all().get(30, TimeUnit.SECONDS);
                            long acked = System.currentTimeMillis();
                            committed[g][p] = offset;
                            synchronized (log) {
                                log.write("C " + group[0] + " " + p + " " + offset + " " + sent + " " + acked + "\n");
                            }
                            due[first] = acked + next(random, meanCommitMs);
                        }
                    } catch (Exception e) {
                        throw new RuntimeException(e);
                    }
                });
                thread.start();
                threads.add(thread);
            }

            Map<String, ListConsumerGroupOffsetsSpec> all = new HashMap<>();
            for (String[] group : groups) all.put(group[0], new ListConsumerGroupOffsetsSpec());
            long nextRead = System.currentTimeMillis();
            while (nextRead < stopAt) {
                long sent = System.currentTimeMillis();
                Map<String, Map<TopicPartition, OffsetAndMetadata>> read =
                    admin.listConsumerGroupOffsets(all).all().get(30, TimeUnit.SECONDS);
                long acked = System.currentTimeMillis();
                StringBuilder lines = new StringBuilder();
                for (String[] group : groups) {
                    Map<TopicPartition, OffsetAndMetadata> offsets = read.get(group[0]);
                    lines.append("R ").append(group[0]).append(' ').append(sent).append(' ').append(acked);
                    for (int p = 0; p < partitions; p++) {
                        OffsetAndMetadata at = offsets == null ? null : offsets.get(new TopicPartition(group[1], p));
                        lines.append(' ').append(at == null ? -1 : at.offset());
                    }
                    lines.append('\n');
                }
                synchronized (log) {
                    log.write(lines.toString());
                    log.flush();
                }
                nextRead += readEveryMs;
                while (System.currentTimeMillis() < Math.min(nextRead, stopAt)) Thread.sleep(10);
            }
            for (Thread thread : threads) thread.join();
        }
        log.close();
        System.out.println("DONE");
    }

    static long next(Random random, double mean) {
        return (long) (-mean * Math.log(1.0 - random.nextDouble()));
    }
}
