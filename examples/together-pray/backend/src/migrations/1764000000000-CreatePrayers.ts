import { MigrationInterface, QueryRunner } from "typeorm";

export class CreatePrayers1764000000000 implements MigrationInterface {
  name = "CreatePrayers1764000000000";

  public async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`
      CREATE TABLE "prayers" (
        "id" SERIAL PRIMARY KEY,
        "author" varchar(80) NOT NULL,
        "body" text NOT NULL,
        "created_at" timestamptz NOT NULL DEFAULT now()
      )`);
    await queryRunner.query(
      `INSERT INTO "prayers" ("author", "body") VALUES ($1, $2)`,
      ["Together Pray", "Welcome. May this be a place of peace for everyone who prays here."],
    );
  }

  public async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query(`DROP TABLE "prayers"`);
  }
}
