import { Controller, Get, ServiceUnavailableException } from "@nestjs/common";
import { DataSource } from "typeorm";

/** What a deploy's health gate and the uptime probe ask: is this release up, and can it reach the database? */
@Controller("health")
export class HealthController {
  constructor(private readonly dataSource: DataSource) {}

  @Get()
  async check(): Promise<{ status: string; release: string; database: string }> {
    const release = process.env.RELEASE_ID ?? "unknown";
    try {
      await this.dataSource.query("SELECT 1");
    } catch {
      throw new ServiceUnavailableException({ status: "error", release, database: "down" });
    }
    return { status: "ok", release, database: "up" };
  }
}
