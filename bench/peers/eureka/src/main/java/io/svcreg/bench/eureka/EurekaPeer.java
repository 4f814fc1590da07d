package io.svcreg.bench.eureka;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.cloud.netflix.eureka.server.EnableEurekaServer;

/** A standalone Eureka server, nothing added: the registry a Spring Cloud team would run. */
@SpringBootApplication
@EnableEurekaServer
public class EurekaPeer {
    public static void main(String[] args) {
        SpringApplication.run(EurekaPeer.class, args);
    }
}
